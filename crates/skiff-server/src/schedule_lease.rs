//! Who runs a schedule's due time when several hosts could. The scheduler
//! (`skiff_triggers`) asks a [`RunLeases`] for each due time; this host alone uses
//! [`LocalLeases`] (in memory), and the hosts of a cluster share Redis leases
//! (`skiff_cluster::RedisLeases`), so that each due time runs on exactly one of them and any
//! host's `apps inspect` shows the last results. Re-exported here so that the cluster crate
//! implements the trait of the host it plugs into.

pub use skiff_triggers::{LocalLeases, RUN_LEASE_TTL, RUNNING_MARK_TTL, RUNS_KEPT, RunLeases};
