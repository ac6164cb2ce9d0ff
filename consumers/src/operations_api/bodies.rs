//! Reading requests: every body bounded before the routes see it (a JSON
//! 413, at once when `Content-Length` says so), every request bounded in
//! time, and bodies and query strings read as filters and options — JSON
//! objects only, unknown fields refused naming them.

use super::*;

/// Most bytes of a request body: an event of the largest size plus room
/// for the JSON around it.
pub fn body_limit(settings: &Settings) -> usize {
    settings.max_event_bytes + 64 * 1024
}

/// Most bytes of an over-limit body read and thrown away before the 413
/// is sent: a client still sending when the server closes would get a
/// reset instead of the answer.
pub(super) const DRAINED_AT_MOST: usize = 8 * 1024 * 1024;

/// Reads the request body before the routes see it, refusing one over
/// `limit` bytes with a JSON 413: at once when its `Content-Length` says
/// so (a length of 10^12 and no body is not waited for; a client that
/// sent `Expect: 100-continue` sends nothing), else once `limit` bytes have
/// come, after reading and dropping the rest (up to [`DRAINED_AT_MOST`]) so
/// that the client reads the answer. A body that does not arrive within
/// [`REQUEST_TIMEOUT`] is answered 408.
pub(super) async fn declared_within(
    limit: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures_util::StreamExt;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let closing = |error: ApiError| {
        let mut response = error.into_response();
        // The body is not read to its end: the connection cannot carry
        // another request.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        response
    };
    if declared.is_some_and(|length| length > limit as u64) {
        return closing(ApiError::too_large(Some(limit)));
    }
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0_usize;
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Err(_) => {
                return closing(ApiError::new_public(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the request body did not arrive in time",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return closing(ApiError::invalid(
                    "$",
                    format!("the body could not be read: {error}"),
                ));
            }
            Ok(Some(Ok(chunk))) => {
                seen = seen.saturating_add(chunk.len());
                if seen <= limit {
                    kept.extend_from_slice(&chunk);
                } else if seen > DRAINED_AT_MOST {
                    return closing(ApiError::too_large(Some(limit)));
                }
            }
        }
    }
    if seen > limit {
        return ApiError::too_large(Some(limit)).into_response();
    }
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(kept));
    next.run(request).await
}

pub(super) async fn bounded_in_time(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// Query parameters as a [`Filter`] plus paging: values are read as the
/// filter's JSON types, so the same names and checks apply (`ids` is
/// comma-separated).
pub(super) fn filter_from_query(
    pairs: Vec<(String, String)>,
) -> Result<(Filter, i64, u32), ApiError> {
    let mut object = serde_json::Map::new();
    let (mut after, mut limit) = (0_i64, 50_u32);
    for (name, value) in pairs {
        let number = |field: &str| {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| ApiError::invalid(field, format!("{field} must be a whole number")))
        };
        match name.as_str() {
            "after" => after = number("after")?,
            "limit" => {
                limit = u32::try_from(number("limit")?)
                    .ok()
                    .filter(|limit| (1..=query::MAX_PAGE).contains(limit))
                    .ok_or_else(|| ApiError::invalid("limit", "limit must be 1 to 1000"))?;
            }
            "min_attempts" | "max_attempts" => {
                object.insert(name.clone(), Value::from(number(&name)?));
            }
            "ids" => {
                let ids = value
                    .split(',')
                    .filter(|id| !id.trim().is_empty())
                    .map(|id| id.trim().parse::<i64>())
                    .collect::<Result<Vec<i64>, _>>()
                    .map_err(|_| {
                        ApiError::invalid("ids", "ids must be comma-separated whole numbers")
                    })?;
                object.insert(name, Value::from(ids));
            }
            _ => {
                object.insert(name, Value::from(value));
            }
        }
    }
    let filter = parse_filter(Value::Object(object))?;
    Ok((filter, after, limit))
}

/// `value` as a JSON object, or a 400 naming `field`: serde would read a
/// struct from an array by position (`[]` as the empty filter).
pub(super) fn object(
    value: Value,
    field: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(ApiError::invalid(
            field,
            format!("must be a JSON object, not {}", json_kind(&other)),
        )),
    }
}

pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn parse_filter(value: Value) -> Result<Filter, ApiError> {
    let value = Value::Object(object(value, "filter")?);
    let filter: Filter = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        // An unknown field's path is its parent: the message names it.
        let field = match path.as_str() {
            "" | "." => message
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "filter".to_owned()),
            _ => path,
        };
        ApiError::invalid(field, message)
    })?;
    filter
        .validate()
        .map_err(|error| ApiError::invalid(error.field, error.reason))?;
    Ok(filter)
}

/// The body of resolve and purge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseRequest {
    filter: Value,
    #[serde(default)]
    confirm: bool,
}

/// A JSON request body, or a 400 (413 when over the limit).
pub(super) type JsonBody = Result<Json<Value>, axum::extract::rejection::JsonRejection>;

pub(super) fn json_body(body: JsonBody) -> Result<serde_json::Map<String, Value>, ApiError> {
    let Json(mut value) = body.map_err(ApiError::from_json_rejection)?;
    integral(&mut value);
    object(value, "$")
}

/// Numbers with no fraction written as floats (`2210.0`) made integers:
/// JSON (and the OpenAPI document's `integer`) does not tell them apart,
/// serde does.
pub(super) fn integral(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number
                .as_f64()
                .filter(|_| !number.is_i64() && !number.is_u64())
                && float.fract() == 0.0
                && float.abs() < 9.0e15
            {
                *value = Value::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral),
        Value::Object(fields) => fields.values_mut().for_each(integral),
        _ => {}
    }
}

pub(super) fn close_request(body: JsonBody) -> Result<(Filter, bool), ApiError> {
    let request: CloseRequest = serde_path_to_error::deserialize(Value::Object(json_body(body)?))
        .map_err(|error| {
        let field = match error.path().to_string().as_str() {
            "" | "." => error
                .inner()
                .to_string()
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "$".to_owned()),
            path => path.to_owned(),
        };
        ApiError::invalid(field, error.inner().to_string())
    })?;
    Ok((parse_filter(request.filter)?, request.confirm))
}

pub(super) fn replay_options(body: JsonBody) -> Result<ReplayOptions, ApiError> {
    let mut object = json_body(body)?;
    // The filter is checked on its own so that its errors name its fields.
    let filter = match object.remove("filter") {
        Some(filter) => parse_filter(filter)?,
        None => Filter::default(),
    };
    let mut options: ReplayOptions = serde_path_to_error::deserialize(Value::Object(object))
        .map_err(|error| {
            let path = error.path().to_string();
            let field = if path.is_empty() || path == "." {
                "$".to_owned()
            } else {
                path
            };
            ApiError::invalid(field, error.inner().to_string())
        })?;
    options.filter = filter;
    options.validate()?;
    Ok(options)
}
