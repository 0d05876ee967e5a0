//! The platform, as paysign reaches it: the pooled client of one configuration (kept across
//! reloads while the platform settings stay the same) and the optional egress proxy bridge.

pub mod egress;
mod platform;

pub use platform::PlatformClient;
