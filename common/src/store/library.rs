//! The function library: its versioned source, and loading it where Redis lacks this version
//! (every primary of a cluster).

use super::*;

impl Store {
    /// The library version this build carries.
    pub fn library_version() -> String {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in LIBRARY.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("1.{h:016x}")
    }

    /// The library source as it is loaded (for foreign clients and tests).
    pub fn library_source() -> String {
        LIBRARY.replace("__SLUICE_LIB_VERSION__", &Self::library_version())
    }

    /// Whether Redis answers and holds this build's library (for readiness probes).
    pub async fn ready(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let have: String = redis::cmd("FCALL_RO")
            .arg("sluice_version")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        if have == Self::library_version() {
            Ok(())
        } else {
            Err(StoreError::Protocol(
                "Redis holds another version of the sluice library",
            ))
        }
    }

    pub(super) async fn load_library(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let want = Self::library_version();
        if self.is_cluster() {
            // A version check would ask one random node; loading (REPLACE, on every primary)
            // is idempotent and leaves no primary behind. A user that may not load checks.
            let loaded = redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(Self::library_source())
                .query_async::<Value>(&mut conn)
                .await;
            return match loaded {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("NOPERM") => match self.ready().await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::LibraryMissing {
                        found: e.to_string(),
                    }),
                },
                Err(e) => Err(e.into()),
            };
        }
        let have: Result<String, _> = redis::cmd("FCALL_RO")
            .arg("sluice_version")
            .arg(0)
            .query_async(&mut conn)
            .await;
        match have {
            Ok(v) if v == want => Ok(()),
            Err(e) if e.is_io_error() || e.is_timeout() => Err(StoreError::Redis(e)),
            other => {
                let loaded = redis::cmd("FUNCTION")
                    .arg("LOAD")
                    .arg("REPLACE")
                    .arg(Self::library_source())
                    .query_async::<String>(&mut conn)
                    .await;
                match loaded {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("NOPERM") => Err(StoreError::LibraryMissing {
                        found: match other {
                            Ok(v) => format!("version {v}, this build wants {want}"),
                            Err(e) => e.to_string(),
                        },
                    }),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}
