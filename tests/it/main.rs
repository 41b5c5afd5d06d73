//! The integration test binary: test support modules and the tests that use them.

mod cli;
mod corpus;
mod crash;
mod faults;
mod h1;
mod harness;
mod hostile;
mod selftest;
mod sync;
mod upstream;
mod zipgen;
