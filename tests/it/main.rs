//! The integration test binary: test support modules and the tests that use them.

mod airgap;
mod bundle_export;
mod cli;
mod corpus;
mod crash;
mod daemon;
mod e2e;
mod faults;
mod feed;
mod h1;
mod harness;
mod hostile;
mod issue_13_verify;
mod metrics;
mod nginx;
mod selftest;
mod sumdb;
mod sumdb_go;
mod sync;
mod tools;
mod trust;
mod units;
mod upstream;
mod zipgen;
