//! Who may call: internal callers' bearer tokens and their grants, and the networks
//! notifications may come from.

pub mod auth;
pub mod bearer;
pub mod cidr;
