//! The server API's messages routes.

use super::Route;

/// The messages routes.
pub fn routes() -> Vec<Route> {
    Vec::new()
}
