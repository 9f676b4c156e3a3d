//! `GET /.well-known/oauth-protected-resource[/<resource path>]`: the RFC 9728 metadata of
//! the rules' MCP resources, on the public route Traefik sends there. A request names its
//! resource by the path after the well-known prefix (§3.1); several resources with one path
//! are told apart by `Host`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::answer;

pub(super) async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let active = state.active.load();
    let path = req.path();
    let path = match path.strip_suffix('/') {
        Some(p) if p.len() > crate::mcp_resource::WELL_KNOWN.len() => p,
        _ => path,
    };
    let mut candidates = active
        .rt
        .resources
        .iter()
        .filter(|r| r.metadata_path == path);
    let (Some(first), second) = (candidates.next(), candidates.next()) else {
        return answer::resource_metadata_not_found();
    };
    if second.is_none() {
        return answer::resource_metadata(&first.document);
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    match active
        .rt
        .resources
        .iter()
        .find(|r| r.metadata_path == path && Some(&r.authority) == host.as_ref())
    {
        Some(r) => answer::resource_metadata(&r.document),
        None => answer::resource_metadata_not_found(),
    }
}
