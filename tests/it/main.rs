//! The integration test binary: test support modules and the tests that use them.

mod corpus;
mod h1;
mod harness;
mod selftest;
mod sync;
mod upstream;
mod zipgen;
