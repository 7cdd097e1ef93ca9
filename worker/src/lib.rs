//! sluice-worker: the worker runtime (fetch → processor → upstream → outcome → retry /
//! dead_letter, beside limiter, scheduler, reclaim, metrics, http, shutdown). The runtime lands
//! with the worker-runtime issue; today this crate holds the binary's start-up.
