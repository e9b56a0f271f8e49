//! Unit tests of the decode rules, with resources written in Envoy's JSON form.

mod all_reasons;
mod cluster;
mod filter_chain;
mod hcm;
mod listener;
mod rbac;
mod route;
mod stats;
mod tcp_proxy;
mod tls;
