//! Ways to start work other than a client's request: schedules and queue consumers. A trigger only decides
//! *when* a unit of work starts and with what input; the work itself goes through the same
//! spine as a request (for an HTTP component, the HTTP trigger's own dispatch: the same
//! admission, limits, grants, logs, usage, metrics and traces). The runtime knows nothing of
//! this crate.
//!
//! Modules: `lease` (who runs a due time when several hosts could, and where run results are
//! kept: in-process here, in Redis in `skiff-cluster`), `schedule` (the scheduler: due times
//! per app, overlap, results for inspect), `consume` (the queue trigger: reading with
//! back-pressure, acknowledging, retrying, dead letters), `running` (the apps a trigger runs
//! tasks for), `response` (reading a triggered request's answer).

#![forbid(unsafe_code)]

mod consume;
mod lease;
mod response;
mod running;
mod schedule;

pub use consume::{Consumers, QueueMetrics};
pub use lease::{LocalLeases, RunLeases};
pub use schedule::{
    LATE_LIMIT, RUN_LEASE_TTL, RUNNING_MARK_TTL, RUNS_KEPT, ScheduleMetrics, Scheduler,
};
