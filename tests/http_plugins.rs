//! The http-probe, webhook-notify and stale-file action tests (being written).
