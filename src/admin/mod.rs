//! Admin API (owned by the admin work): certificate and mapping CRUD, P12 tester, mapping checks.

use std::sync::Arc;

use crate::config::Config;
use crate::refresh::Refresher;

/// Everything the admin handlers need.
#[derive(Clone)]
pub struct AdminState {
    pub cfg: Arc<Config>,
    pub refresher: Arc<Refresher>,
}

/// The admin router: a plain function tests can call without a socket.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new().with_state(state)
}
