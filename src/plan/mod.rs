//! What this run needs: turns the watchlist (later also the index feed and
//! go.mod closures) into a de-duplicated list of module versions to fetch.

pub mod watchlist;
