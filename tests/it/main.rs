//! The integration test binary: test support modules and the tests that use them.

mod corpus;
mod e2e;
mod h1;
mod harness;
mod nginx;
mod selftest;
mod sync;
mod upstream;
mod zipgen;
