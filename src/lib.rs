//! # paysign
//!
//! A signing gateway on pingora between a merchant's internal services and an
//! aggregated-payment platform's open API:
//!
//! ```text
//! internal service ──plaintext JSON──▶ paysign ──{customerNo, reqmsg}──▶ platform
//! internal service ◀──verified JSON─── paysign ◀──{code, data:{reqmsg}}── platform
//! Prometheus ──scrape──▶ paysign /metrics
//! ```
//!
//! Data flow through the modules:
//! - [`config`] turns `conf/*.yaml` into a validated [`config::Config`] with all keys parsed;
//! - [`proxy`] (pingora `ProxyHttp`) reads the request, validates it with
//!   [`protocol::schema`], seals it with [`protocol::envelope`], sends it with [`upstream`],
//!   opens and verifies the answer, and maps every failure through [`error`];
//! - [`crypto`] holds the primitives (keys, segmented RSA, signatures);
//! - [`metrics`], [`logging`] and [`admin`] make it observable;
//! - [`sandbox`] simulates the platform for the demo and the tests;
//! - [`server`] assembles pingora services.

pub mod addresses;
pub mod admin;
pub mod bearer;
pub mod cidr;
pub mod config;
pub mod crypto;
pub mod egress;
pub mod error;
pub mod executor;
pub mod h5;
pub mod http_client;
pub mod listener;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod proxy;
pub mod sandbox;
pub mod serve;
pub mod server;
pub mod tools;
pub mod upstream;
