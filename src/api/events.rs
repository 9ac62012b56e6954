//! The server API's events routes.

use super::Route;

/// The events routes.
pub fn routes() -> Vec<Route> {
    Vec::new()
}
