//! The mock model API: an OpenAI-compatible HTTP server with configurable latency, failure
//! injection, an enforced RPM/TPM quota, and a record of every call, used by the tests, the
//! benchmark and the demo (over real HTTP on loopback).
//!
//! - `POST /v1/chat/completions`, `POST /v1/embeddings`: realistic bodies with `usage`;
//! - failures by rate (`MockConfig`), or scripted per job with a `"mock": {"script": [503, 200]}`
//!   field in the request body (the n-th call of a job answers `script[n]`; `0` hangs, `1` resets
//!   the connection); `"mock": {"answer_bytes": n}` makes the answer's text n bytes long;
//! - `GET /stats`: calls, answers by status, early calls (a call for a job before the reset its
//!   last 429 announced), and with `?jobs=1` every job's call times and statuses;
//! - `POST /control`: replace the config (e.g. turn a 401 outage on and off);
//! - `POST /reset`: forget the recorded calls.
//!
//! It speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port (listen.rs).

mod listen;
mod quota;
mod server;

pub use server::{Call, MockConfig, MockServer, Stats};
