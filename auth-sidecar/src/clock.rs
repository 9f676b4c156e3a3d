//! The wall clock, read in one place; everything below the HTTP layer takes `now` as an
//! argument.

/// Unix time in seconds from the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
