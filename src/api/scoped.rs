//! Routes that declare what they need. Every resource builds its routes here, each
//! with the one [`Scope`] a token must hold; the table this produces is what the
//! authorization layer enforces and what the authorization tests walk, so a route
//! cannot be added without a scope, nor a scope go unchecked. The few routes outside the
//! gate are built the same way ([`OpenRoutes`]), so that none can be served unlisted.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::auth::Scope;
use crate::state::AppState;

/// One route, one method, the scope it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteScope {
    pub method: Method,
    /// As axum matches it: `/v1/orders/{order_id}`.
    pub path: String,
    pub scope: Scope,
}

/// A router and the table of what each of its routes needs, built together.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<RouteScope>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &str,
        scope: Scope,
        handler: H,
    ) -> Self {
        self.on(Method::GET, MethodFilter::GET, path, scope, handler)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &str,
        scope: Scope,
        handler: H,
    ) -> Self {
        self.on(Method::POST, MethodFilter::POST, path, scope, handler)
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &str,
        scope: Scope,
        handler: H,
    ) -> Self {
        self.on(Method::PATCH, MethodFilter::PATCH, path, scope, handler)
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &str,
        scope: Scope,
        handler: H,
    ) -> Self {
        self.on(Method::DELETE, MethodFilter::DELETE, path, scope, handler)
    }

    fn on<H: Handler<T, AppState>, T: 'static>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &str,
        scope: Scope,
        handler: H,
    ) -> Self {
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(RouteScope {
            method,
            path: path.to_owned(),
            scope,
        });
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Every route under `prefix` (`/v1`).
    pub fn nest(self, prefix: &str) -> Self {
        Routes {
            router: Router::new().nest(prefix, self.router),
            table: self
                .table
                .into_iter()
                .map(|route| RouteScope {
                    path: format!("{prefix}{}", route.path),
                    ..route
                })
                .collect(),
        }
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteScope>) {
        (self.router, self.table)
    }

    pub fn table(&self) -> &[RouteScope] {
        &self.table
    }
}

/// One route outside the token gate: anyone may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRoute {
    pub method: Method,
    pub path: String,
}

/// Routes outside the gate (`/health`, the dashboard's files, the signed storefront
/// webhooks) and the table of them, built together as [`Routes`] are: what the OpenAPI
/// document is held to.
#[derive(Default)]
pub struct OpenRoutes {
    router: Router<AppState>,
    table: Vec<OpenRoute>,
}

impl OpenRoutes {
    pub fn new() -> OpenRoutes {
        OpenRoutes::default()
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(Method::GET, MethodFilter::GET, path, handler)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(Method::POST, MethodFilter::POST, path, handler)
    }

    fn on<H: Handler<T, AppState>, T: 'static>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &str,
        handler: H,
    ) -> Self {
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(OpenRoute {
            method,
            path: path.to_owned(),
        });
        self
    }

    pub fn merge(mut self, other: OpenRoutes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// These routes' router wrapped by `layers` (`Router::layer`); the table is the same.
    pub fn wrap(mut self, layers: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = layers(self.router);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<OpenRoute>) {
        (self.router, self.table)
    }
}
