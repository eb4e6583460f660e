//! End-to-end tests: the real binaries against the real RabbitMQ and
//! Postgres. One module per behaviour; every test starts its own
//! [`TestCluster`] (own database, own namespace).

#![allow(missing_docs)]

mod api;
mod attacks;
mod auth;
mod chaos;
mod control;
mod events;
mod fanout;
mod faults;
mod fleet;
mod kinds;
mod leases;
mod list;
mod poison;
mod restarts;
mod scenarios;
mod tls;
mod ui;
mod waiting;
mod watch;
