//! Operating paysign: per-instance metrics, structured logs, the admin listener, and the
//! safeguards every listener runs behind (connection bound, head deadline and size).

pub mod admin;
pub mod drain;
pub mod inbox_admin;
pub mod listener;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod sighup;
