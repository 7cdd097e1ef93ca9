//! The OpenAPI document at `/openapi.json`. The paths come from the handlers' `#[utoipa::path]`
//! annotations (collected by the router, `super::router`), the schemas from the types they name;
//! this file adds only the title and the bearer-key security scheme.

use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document's fixed parts.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "sluice-api",
        description = "Durable, deduplicated, rate-limited model-API calls as jobs (docs/API.md)."
    ),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

/// `Authorization: Bearer <key>` (a key from `sluice api-key`).
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
