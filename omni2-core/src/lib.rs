//! omni2-core: filled in by its own issue.
