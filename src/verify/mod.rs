//! Temp files from the fetch stage → a verified version, or a reason to
//! quarantine it: zip rules and the `h1:` hash.

pub mod dirhash;
pub mod zip;
