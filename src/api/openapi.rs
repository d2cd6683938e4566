//! `GET /openapi.json`: the API described as an OpenAPI 3.1 document, built from the code.
//!
//! Each resource module lists its operations ([`Op`]) beside its handlers, with the
//! types its handlers parse and render (their `utoipa::ToSchema` and `IntoParams`
//! derivations). This module assembles them and adds, programmatically, what is the
//! same for many routes: the path parameters read from the route's template, the
//! errors every gated route or every command can answer, the error body's schema, and
//! each operation's security requirement, taken from the very table the token gate
//! enforces ([`super::route_table`]), so the document and the gate cannot disagree.
//! It never decides what a route does, and never names a scope of its own.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{header, Method};
use axum::response::IntoResponse;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder, Responses,
};
use utoipa::{IntoParams, ToSchema};

use super::scoped::OpenRoutes;

/// The security scheme every gated operation names, with its one scope.
pub const BEARER: &str = "bearerAuth";
/// A cursor of the log, `{transaction_id}-{position}` (`812-40001`), as
/// `Cursor::parse_token` reads it.
pub const CURSOR: &str = r"^\s*\+?[0-9]{1,18}-\+?[0-9]{1,18}\s*$";
/// A header's text as `extract::header_text` takes it: printable ASCII, no spaces.
pub const HEADER_TEXT: &str = "^[!-~]{1,255}$";
/// The schema of every error body: `{code, detail, field?}`.
const ERROR_SCHEMA: &str = "Error";

/// Open to anyone, like `/health`: the document holds no data.
pub fn open_routes() -> OpenRoutes {
    OpenRoutes::new().get("/openapi.json", serve)
}

pub fn operations() -> Vec<Op> {
    vec![
        Op::get("/openapi.json", "This document: the API in OpenAPI 3.1").content(
            200,
            "the document",
            "application/json",
            any_object(),
        ),
    ]
}

async fn serve() -> impl IntoResponse {
    // Built once: the routes cannot change while the server runs.
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| document().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}

/// A body's media type and schema.
type Media = (&'static str, RefOr<Schema>);

/// One documented operation: a method, a path as axum matches it, and what it takes and
/// answers. Generic errors and security are added by [`document`].
pub struct Op {
    pub method: Method,
    pub path: &'static str,
    summary: &'static str,
    body: Option<(&'static str, RefOr<Schema>, bool)>,
    query: Vec<Parameter>,
    path_params: BTreeMap<&'static str, RefOr<Schema>>,
    headers: Vec<Parameter>,
    responses: Vec<(u16, &'static str, Option<Media>)>,
    errors: Vec<(u16, &'static str)>,
    components: Vec<(String, RefOr<Schema>)>,
}

impl Op {
    fn new(method: Method, path: &'static str, summary: &'static str) -> Op {
        Op {
            method,
            path,
            summary,
            body: None,
            query: Vec::new(),
            path_params: BTreeMap::new(),
            headers: Vec::new(),
            responses: Vec::new(),
            errors: Vec::new(),
            components: Vec::new(),
        }
    }

    pub fn get(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::GET, path, summary)
    }

    pub fn post(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::POST, path, summary)
    }

    pub fn patch(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::PATCH, path, summary)
    }

    pub fn delete(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::DELETE, path, summary)
    }

    /// A JSON body (`JsonBody<T>`), required.
    pub fn json_body<T: ToSchema>(mut self) -> Op {
        T::schemas(&mut self.components);
        self.body = Some(("application/json", T::schema(), true));
        self
    }

    /// A JSON body that may be left out (`OptionalJsonBody<T>`).
    pub fn optional_json_body<T: ToSchema>(mut self) -> Op {
        T::schemas(&mut self.components);
        self.body = Some(("application/json", T::schema(), false));
        self
    }

    /// A body that is not JSON (`application/x-ndjson`, a storefront's raw delivery).
    pub fn raw_body(mut self, content_type: &'static str, schema: RefOr<Schema>) -> Op {
        self.body = Some((content_type, schema, true));
        self
    }

    /// The query string's parameters (`QueryParams<T>`).
    pub fn query<T: IntoParams>(mut self) -> Op {
        self.query
            .extend(T::into_params(|| Some(ParameterIn::Query)));
        self
    }

    /// A path parameter's schema, where it is not any string.
    pub fn param(mut self, name: &'static str, schema: RefOr<Schema>) -> Op {
        self.path_params.insert(name, schema);
        self
    }

    /// A request header the handler reads.
    pub fn header(
        mut self,
        name: &'static str,
        description: &'static str,
        schema: RefOr<Schema>,
    ) -> Op {
        self.headers.push(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema))
                .build(),
        );
        self
    }

    /// `Idempotency-Key`, which every gated POST takes.
    fn idempotent(self) -> Op {
        self.header(
            "Idempotency-Key",
            "replays the first answer to the same key from the same token",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(HEADER_TEXT))
                .into(),
        )
    }

    /// A JSON answer whose body is `T`.
    pub fn json<T: ToSchema>(mut self, status: u16, description: &'static str) -> Op {
        T::schemas(&mut self.components);
        let name = T::name().into_owned();
        self.components.push((name.clone(), T::schema()));
        self.responses.push((
            status,
            description,
            Some(("application/json", Ref::from_schema_name(name).into())),
        ));
        self
    }

    /// A JSON answer whose body is `T`, described in place rather than as a component:
    /// the instances of a generic `T` would all share one component name.
    pub fn json_inline<T: ToSchema>(mut self, status: u16, description: &'static str) -> Op {
        T::schemas(&mut self.components);
        self.responses
            .push((status, description, Some(("application/json", T::schema()))));
        self
    }

    /// An answer with no body (204).
    pub fn empty(mut self, status: u16, description: &'static str) -> Op {
        self.responses.push((status, description, None));
        self
    }

    pub fn content(
        mut self,
        status: u16,
        description: &'static str,
        content_type: &'static str,
        schema: RefOr<Schema>,
    ) -> Op {
        self.responses
            .push((status, description, Some((content_type, schema))));
        self
    }

    /// A route-specific error: its status and the codes it answers with.
    pub fn error(mut self, status: u16, codes: &'static str) -> Op {
        self.errors.push((status, codes));
        self
    }
}

/// Any JSON value: `{}`.
pub fn any_value() -> RefOr<Schema> {
    ObjectBuilder::new().into()
}

/// Any JSON object.
pub fn any_object() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Object).into()
}

pub fn string() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

pub fn uuid() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )))
        .into()
}

pub fn integer(minimum: Option<i64>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(minimum.map(|m| m as isize))
        .into()
}

fn error_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("code", string())
        .required("code")
        .property("detail", string())
        .required("detail")
        .property("field", string())
        .description(Some(
            "Every error: a stable machine `code`, a sentence, and the field a bad value \
             came from; some codes add facts under their own key (`short` of `out_of_stock`).",
        ))
        .into()
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::PUT => HttpMethod::Put,
        _ => HttpMethod::Head,
    }
}

/// The generic errors of an operation: what the layers around every handler answer.
fn generic_errors(op: &Op, gated: bool) -> Vec<(u16, &'static str)> {
    let mut errors = Vec::new();
    let has_params = op.path.contains('{') || !op.query.is_empty();
    let command = op.method != Method::GET;
    if gated {
        errors.push((
            401,
            "unauthenticated: no token, or one unknown, expired or revoked",
        ));
        errors.push((
            403,
            "forbidden: the token lacks the route's scope (named in `field`)",
        ));
        errors.push((
            429,
            "rate_limited: the token is over its rate (see Retry-After)",
        ));
        // Every gated route reads its query string and headers strictly (a control
        // character, a bad `X-Wait-For`, a reused `Idempotency-Key`).
        errors.push((
            400,
            "malformed input: invalid_json, invalid_path, invalid_header, …",
        ));
        errors.push((422, "invalid_field (naming it), or a value a rule refuses"));
    } else if op.body.is_some() || has_params {
        errors.push((400, "malformed input"));
        errors.push((422, "invalid_field"));
    }
    if gated || op.body.is_some() {
        errors.push((
            413,
            "payload_too_large: the body is over ORDERLOG_BODY_LIMIT",
        ));
    }
    if op.body.is_some() {
        errors.push((
            415,
            "unsupported_media_type: the body is not `application/json`",
        ));
    }
    if op.path.contains('{') {
        errors.push((404, "not found"));
    }
    if command && gated {
        errors.push((409, "conflict: concurrent requests changed it; retry"));
    }
    if op.method == Method::POST && gated {
        errors.push((
            409,
            "idempotency_key_in_flight: the Idempotency-Key's first request is still running; \
             idempotency_answer_lost: it took effect and its answer was lost in a crash",
        ));
    }
    errors.push((
        503,
        "saturated or unavailable: nothing was written; retry after Retry-After",
    ));
    errors.push((500, "internal_error: logged with its cause"));
    errors
}

/// The path parameters of a template: `/orders/{order_id}` has `order_id`.
fn template_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The document, with each gated operation's scope from the route table.
pub fn document() -> OpenApi {
    let table = super::route_table();
    let mut components: BTreeMap<String, RefOr<Schema>> = BTreeMap::new();
    components.insert(ERROR_SCHEMA.to_owned(), error_schema());
    let mut paths = Paths::new();
    for op in super::operations() {
        let scope = table
            .iter()
            .find(|route| route.method == op.method && route.path == op.path)
            .map(|route| route.scope);
        let op = if scope.is_some() && op.method == Method::POST {
            op.idempotent()
        } else {
            op
        };
        let mut builder = OperationBuilder::new()
            .summary(Some(op.summary))
            .operation_id(Some(operation_id(&op.method, op.path)));
        for name in template_params(op.path) {
            let schema = op.path_params.get(name).cloned().unwrap_or_else(string);
            builder = builder.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(schema))
                    .build(),
            );
        }
        for param in op.query.iter().chain(&op.headers) {
            builder = builder.parameter(param.clone());
        }
        if let Some((content_type, schema, required)) = &op.body {
            builder = builder.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        *content_type,
                        ContentBuilder::new().schema(Some(schema.clone())).build(),
                    )
                    .required(Some(if *required {
                        Required::True
                    } else {
                        Required::False
                    }))
                    .build(),
            ));
        }
        let mut responses: BTreeMap<String, utoipa::openapi::Response> = BTreeMap::new();
        for (status, description, content) in &op.responses {
            let mut response = ResponseBuilder::new().description(*description);
            if let Some((content_type, schema)) = content {
                response = response.content(
                    *content_type,
                    ContentBuilder::new().schema(Some(schema.clone())).build(),
                );
            }
            match responses.entry(status.to_string()) {
                // One status, several media types (NDJSON or Parquet).
                std::collections::btree_map::Entry::Occupied(mut entry) => {
                    entry.get_mut().content.extend(response.build().content);
                }
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(response.build());
                }
            }
        }
        let mut errors = generic_errors(&op, scope.is_some());
        // A route's own codes name its errors; the generic line stays for the others.
        errors.extend(op.errors.iter().copied());
        for (status, description) in errors {
            let error_ref: RefOr<Schema> = Ref::from_schema_name(ERROR_SCHEMA).into();
            let entry = responses.entry(status.to_string()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description("")
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(error_ref)).build(),
                    )
                    .build()
            });
            entry.description = if entry.description.is_empty() {
                description.to_owned()
            } else {
                format!("{}; {description}", entry.description)
            };
        }
        let mut operation: Operation = builder.build();
        let mut all = Responses::new();
        all.responses = responses
            .into_iter()
            .map(|(status, response)| (status, RefOr::T(response)))
            .collect();
        operation.responses = all;
        operation.security = Some(match scope {
            Some(scope) => vec![SecurityRequirement::new(BEARER, [scope.as_str()])],
            None => Vec::new(),
        });
        for (name, schema) in op.components {
            // Two types of one name would share a schema: the unit test below refuses it.
            components.entry(name).or_insert(schema);
        }
        paths.add_path_operation(op.path, vec![http_method(&op.method)], operation);
    }
    let mut built = ComponentsBuilder::new().security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("olk_…")
                .build(),
        ),
    );
    for (name, schema) in components {
        built = built.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("orderlog")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(env!("CARGO_PKG_DESCRIPTION")))
                .build(),
        )
        .paths(paths)
        .components(Some(built.build()))
        .build()
}

/// `post_v1_orders_order_id_payments`: unique, since a method and a path are.
fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(part.chars().map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => c,
            _ => '_',
        }));
    }
    id.replace("__", "_").trim_end_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route_both_ways() {
        let mut served: Vec<(String, String)> = crate::api::route_table()
            .into_iter()
            .map(|route| (route.method.to_string(), route.path))
            .collect();
        served.extend(
            crate::api::open_route_table()
                .into_iter()
                .map(|route| (route.method.to_string(), route.path)),
        );
        served.sort();
        let mut documented: Vec<(String, String)> = crate::api::operations()
            .into_iter()
            .map(|op| (op.method.to_string(), op.path.to_owned()))
            .collect();
        documented.sort();
        let missing: Vec<_> = served.iter().filter(|r| !documented.contains(r)).collect();
        let extra: Vec<_> = documented.iter().filter(|r| !served.contains(r)).collect();
        assert!(
            missing.is_empty(),
            "routes without an operation: {missing:?}"
        );
        assert!(extra.is_empty(), "operations without a route: {extra:?}");
        let mut unique = documented.clone();
        unique.dedup();
        assert_eq!(unique, documented, "an operation is described twice");
    }

    #[test]
    fn no_two_schemas_share_a_name() {
        let mut seen: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for op in crate::api::operations() {
            for (name, schema) in op.components {
                let schema = serde_json::to_value(schema).unwrap();
                let first = seen.entry(name.clone()).or_insert_with(|| schema.clone());
                assert_eq!(*first, schema, "two schemas named {name}");
            }
        }
    }

    #[test]
    fn every_gated_operation_requires_its_scope_from_the_route_table() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for route in crate::api::route_table() {
            let method = route.method.as_str().to_ascii_lowercase();
            let op = &doc["paths"][&route.path][&method];
            assert_eq!(
                op["security"],
                serde_json::json!([{ BEARER: [route.scope.as_str()] }]),
                "{} {}",
                route.method,
                route.path
            );
            for status in ["401", "403", "429", "500"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {}: {status}",
                    route.path
                );
            }
        }
    }
}

/// The domain's values as the API reads them, described here rather than in `domain/`,
/// which knows nothing of HTTP. A schema is never stricter than the value's `parse`: a
/// value the schema refuses is one the server refuses (a fuzzer checks both ways).
mod values {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    use utoipa::{PartialSchema, ToSchema};

    use crate::domain::order::{OrderStatus, Origin, PaymentStatus, ShipmentLine, ShipmentStatus};
    use crate::domain::values::*;

    /// A string enum, from the names serde gives the values.
    fn names<T: serde::Serialize>(values: &[T], description: &str) -> RefOr<Schema> {
        let names: Vec<String> = values
            .iter()
            .filter_map(|v| serde_json::to_value(v).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some(description))
            .into()
    }

    fn identifier(max: usize, dots: bool, description: &str) -> RefOr<Schema> {
        // Letters, digits, `-`, `_` (and `.` in SKUs), but never `.` or `..`.
        let pattern = if dots {
            r"^([A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*|\.{3,})$"
        } else {
            r"^[A-Za-z0-9_-]+$"
        };
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(max))
            .pattern(Some(pattern))
            .description(Some(description))
            .into()
    }

    macro_rules! schema {
        ($name:ident, $schema:expr) => {
            impl PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    $schema
                }
            }
            impl ToSchema for $name {}
        };
    }

    schema!(
        OrderId,
        identifier(OrderId::MAX_LEN, false, "an order's id")
    );
    schema!(
        CustomerId,
        identifier(CustomerId::MAX_LEN, false, "the storefront's customer id")
    );
    schema!(
        PaymentId,
        identifier(
            PaymentId::MAX_LEN,
            false,
            "a payment's id, unique in its order"
        )
    );
    schema!(
        ShipmentId,
        identifier(
            ShipmentId::MAX_LEN,
            false,
            "a shipment's id, unique in its order"
        )
    );
    schema!(
        RefundId,
        identifier(
            RefundId::MAX_LEN,
            false,
            "a refund's id, unique in its order"
        )
    );
    schema!(Sku, identifier(Sku::MAX_LEN, true, "a stock keeping unit"));
    schema!(
        SourceName,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(SourceName::MAX_LEN))
            .pattern(Some("^[a-z0-9-]+$"))
            .description(Some("a storefront source's name"))
            .into()
    );
    schema!(
        Quantity,
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1isize))
            .maximum(Some(Quantity::MAX as usize))
            .description(Some("a count of units"))
            .into()
    );
    schema!(
        MinorUnits,
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1isize))
            .maximum(Some(Money::MAX_AMOUNT as usize))
            .description(Some("an amount in minor units of the order's currency"))
            .into()
    );
    schema!(
        Currency,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(currencies()))
            .description(Some("an ISO 4217 currency in circulation"))
            .into()
    );
    // Trimmed, non-empty, at most 500 characters, no control character but tabs and
    // newlines: the trimming makes an exact JSON Schema impractical, so only the type.
    schema!(
        Text,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "free text: not blank, at most 500 characters once trimmed, no control \
                 character but tabs and newlines"
            ))
            .into()
    );
    schema!(
        FreeText,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(FreeText::MAX_LEN))
            .description(Some(
                "free text, possibly empty: no control character but tabs and newlines"
            ))
            .into()
    );
    schema!(
        Email,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("an email address (personal data, sealed at rest)"))
            .into()
    );
    schema!(
        Phone,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("a phone number (personal data, sealed at rest)"))
            .into()
    );
    schema!(
        CountryCode,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Z]{2}$"))
            .description(Some("an ISO 3166-1 alpha-2 country code"))
            .into()
    );
    schema!(
        ShippingAddress,
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("name", FreeText::schema())
            .required("name")
            .property("line1", FreeText::schema())
            .required("line1")
            .property("line2", FreeText::schema())
            .property("city", FreeText::schema())
            .required("city")
            .property("region", FreeText::schema())
            .property("postal_code", FreeText::schema())
            .required("postal_code")
            .property("country", CountryCode::schema())
            .required("country")
            .description(Some("an address (personal data, sealed at rest)"))
            .into()
    );

    schema!(
        OrderStatus,
        names(&OrderStatus::ALL, "where the order stands")
    );
    schema!(
        PaymentStatus,
        names(
            &[
                PaymentStatus::Pending,
                PaymentStatus::Captured,
                PaymentStatus::Failed
            ],
            "where a payment stands"
        )
    );
    schema!(
        ShipmentStatus,
        names(
            &[ShipmentStatus::Dispatched, ShipmentStatus::Delivered],
            "where a shipment stands"
        )
    );
    schema!(
        ShipmentLine,
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("sku", Sku::schema())
            .required("sku")
            .property("quantity", Quantity::schema())
            .required("quantity")
            .into()
    );
    schema!(
        Origin,
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("source", SourceName::schema())
            .required("source")
            .property("external_id", Text::schema())
            .required("external_id")
            .property("external_number", Text::schema())
            .description(Some(
                "the storefront the order came through, and its own id for it"
            ))
            .into()
    );

    /// Every code `Currency::parse` accepts.
    fn currencies() -> Vec<String> {
        let letters = || b'A'..=b'Z';
        let mut codes = Vec::new();
        for a in letters() {
            for b in letters() {
                for c in letters() {
                    let code = String::from_utf8(vec![a, b, c]).unwrap_or_default();
                    if Currency::parse(&code).is_ok() {
                        codes.push(code);
                    }
                }
            }
        }
        codes
    }
}
