//! The integration test binary: test support modules and the tests that use them.

mod corpus;
mod selftest;
mod upstream;
mod zipgen;
