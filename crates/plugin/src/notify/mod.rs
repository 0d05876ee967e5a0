//! Platform notifications: the listener (a pingora service with the safeguards applied), each
//! notification's steps (source → intake → open and verify → deliver → acknowledge), and the
//! target seam verified notifications are handed to.

mod deliverer;
mod flow;
mod inbox;
mod service;
mod target;

pub use deliverer::Deliverer;
pub use flow::{notification_id, NotificationFacts, NotificationLine, NotificationOutcome, NotifyState, NOTIFICATION_ID_HEADER};
pub use inbox::InboxCell;
pub use service::{Notifications, NOTIFY_NICE};
pub use target::{HttpTarget, NotificationTarget, TargetAnswer, TargetError};
