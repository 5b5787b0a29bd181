//! Console pages: certificates (to be written).

use crate::admin::AdminState;

pub fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
}
