//! The main listener's service. ForwardAuth calls (`/verify`, `/verify/...`,
//! `/api/v1/auth/validate`) are answered straight from the actix-http request; everything
//! else goes to the actix-web `App`. On a cached token the App layer (its request object,
//! routing, extractors and boxed handler futures) cost more than the whole decision.
//! `HttpServer` still owns the listener, so its limits, timeouts, keep-alive and graceful
//! shutdown hold for both. The App keeps the forwardAuth routes too: a path spelled in a
//! way this exact match does not take (say, percent-encoded) is still answered, by it.

use std::sync::Arc;

use actix_http::Request;
use actix_web::Error;
use actix_web::body::BoxBody;
use actix_web::dev::{
    AppConfig, Response, Service, ServiceFactory, ServiceResponse, forward_ready,
};
use futures_util::future::{Either, LocalBoxFuture};

use super::AppState;
use super::verify;

/// Whether `path` (the request target's path, as sent) is a forwardAuth endpoint.
pub fn is_forward_auth(path: &str) -> bool {
    path == "/verify" || path.starts_with("/verify/") || path == "/api/v1/auth/validate"
}

/// Makes one [`FrontService`] per worker around that worker's `App`.
pub struct Front<A> {
    pub(super) state: Arc<AppState>,
    pub(super) app: A,
}

impl<A> ServiceFactory<Request> for Front<A>
where
    A: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<BoxBody>,
            Error = Error,
        >,
    A::Future: 'static,
    A::Service: 'static,
    <A::Service as Service<Request>>::Future: 'static,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    type Config = AppConfig;
    type Service = FrontService<A::Service>;
    type InitError = A::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, config: AppConfig) -> Self::Future {
        let app = self.app.new_service(config);
        let state = self.state.clone();
        Box::pin(async move {
            Ok(FrontService {
                state,
                app: app.await?,
            })
        })
    }
}

/// One worker's service: forwardAuth calls here, the rest to the App.
pub struct FrontService<S> {
    state: Arc<AppState>,
    app: S,
}

impl<S> Service<Request> for FrontService<S>
where
    S: Service<Request, Response = ServiceResponse<BoxBody>, Error = Error>,
    S::Future: 'static,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    /// Ready for a decision that needs nothing remote (no allocation for the future).
    type Future = verify::Answer;

    forward_ready!(app);

    fn call(&self, req: Request) -> Self::Future {
        if is_forward_auth(req.path()) {
            return verify::answer(&self.state, req);
        }
        let app = self.app.call(req);
        Either::Right(Box::pin(async move { app.await.map(Response::from) }))
    }
}

#[cfg(test)]
mod tests {
    use super::is_forward_auth;

    #[test]
    fn forward_auth_paths_are_exact() {
        for p in [
            "/verify",
            "/verify/",
            "/verify/x/y",
            "/api/v1/auth/validate",
        ] {
            assert!(is_forward_auth(p), "{p}");
        }
        for p in [
            "/verifyx",
            "/",
            "/healthz",
            "/metrics",
            "/api/v1/auth/validate/x",
            "/VERIFY",
        ] {
            assert!(!is_forward_auth(p), "{p}");
        }
    }
}
