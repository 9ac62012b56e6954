//! The server API's users routes.

use super::Route;

/// The users routes.
pub fn routes() -> Vec<Route> {
    Vec::new()
}
