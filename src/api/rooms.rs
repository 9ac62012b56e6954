//! The server API's rooms routes.

use super::Route;

/// The rooms routes.
pub fn routes() -> Vec<Route> {
    Vec::new()
}
