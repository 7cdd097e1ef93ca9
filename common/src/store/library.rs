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

    /// The library version Redis holds (`FCALL_RO sluice_version 0`).
    async fn installed_version(&self) -> Result<String, redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("FCALL_RO")
            .arg("sluice_version")
            .arg(0)
            .query_async(&mut conn)
            .await
    }

    /// `FUNCTION LOAD REPLACE` of this build's library (on a cluster, every primary).
    async fn function_load(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(Self::library_source())
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Whether Redis answers and holds this build's library (for readiness probes).
    pub async fn ready(&self) -> Result<(), StoreError> {
        if self.installed_version().await? == Self::library_version() {
            Ok(())
        } else {
            Err(StoreError::Protocol(
                "Redis holds another version of the sluice library",
            ))
        }
    }

    /// Loads the library where Redis lacks this version. On a cluster it loads without asking (a
    /// version check would ask one random node; REPLACE on every primary is idempotent). A user
    /// that may not load (NOPERM) is fine if the right version is there already.
    pub(super) async fn load_library(&self) -> Result<(), StoreError> {
        let want = Self::library_version();
        let have = if self.is_cluster() {
            None
        } else {
            match self.installed_version().await {
                Ok(v) if v == want => return Ok(()),
                Err(e) if e.is_io_error() || e.is_timeout() => return Err(StoreError::Redis(e)),
                other => Some(other),
            }
        };
        match self.function_load().await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("NOPERM") => {
                let found = match have {
                    Some(Ok(v)) => format!("version {v}, this build wants {want}"),
                    Some(Err(e)) => e.to_string(),
                    // A cluster: loaded already by someone allowed to?
                    None => match self.ready().await {
                        Ok(()) => return Ok(()),
                        Err(e) => e.to_string(),
                    },
                };
                Err(StoreError::LibraryMissing { found })
            }
            Err(e) => Err(e.into()),
        }
    }
}
