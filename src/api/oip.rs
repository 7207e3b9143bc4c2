//! Open Inference Protocol bodies: JSON, or JSON followed by raw tensor bytes (the binary tensor
//! extension), in requests and in responses.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::ApiError;
use crate::config::Limits;
use crate::tensor::{decode_binary, decode_oip, element_count, encode_oip, HostTensor, OipTensor};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A request body: the JSON header and the binary tensor data after it.
pub struct OipBody<T> {
    pub header: T,
    pub binary: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OipBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let header_length = match request.headers().get(HEADER_LENGTH) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        ApiError::Invalid(format!(
                            "Inference-Header-Content-Length: must be a byte count, got {value:?}"
                        ))
                    })?,
            ),
        };
        let body = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!("request body: {}", e.body_text()))
            } else {
                ApiError::Invalid(format!("request body: {}", e.body_text()))
            }
        })?;
        let (json, binary) = match header_length {
            None => (body.clone(), Bytes::new()),
            Some(n) if n <= body.len() => (body.slice(..n), body.slice(n..)),
            Some(n) => {
                return Err(ApiError::Invalid(format!(
                    "Inference-Header-Content-Length: {n} exceeds the body's {} bytes",
                    body.len()
                )))
            }
        };
        let header = serde_json::from_slice(&json)
            .map_err(|e| ApiError::Invalid(format!("request body: {e}")))?;
        Ok(Self { header, binary })
    }
}

/// Decodes each tensor from its JSON `data` or, when its `parameters.binary_data_size` is set,
/// from its share of the binary data, in order.
pub fn decode_tensors(
    tensors: &[OipTensor],
    binary: &Bytes,
    limits: &Limits,
) -> Result<Vec<HostTensor>, ApiError> {
    let mut offset = 0usize;
    let mut decoded = Vec::with_capacity(tensors.len());
    let mut elements = 0usize;
    for (i, tensor) in tensors.iter().enumerate() {
        let field = format!("inputs[{i}]");
        if tensor.shape.len() > limits.max_tensor_rank {
            return Err(ApiError::Invalid(format!(
                "{field}.shape: a tensor may have at most {} dimensions (--max-tensor-rank), \
                 got {}",
                limits.max_tensor_rank,
                tensor.shape.len()
            )));
        }
        elements = element_count(&tensor.shape)
            .and_then(|n| n.checked_add(elements))
            .filter(|&n| n <= limits.max_elements)
            .ok_or_else(|| {
                ApiError::TooLarge(format!(
                    "{field}.shape: the request's tensors may hold at most {} elements in all \
                     (--max-elements), got {:?} after {elements}",
                    limits.max_elements, tensor.shape
                ))
            })?;
        let size = tensor
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"));
        let host = match size {
            None => decode_oip(tensor, &field)?,
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "{field}.parameters.binary_data_size: must be a byte count, got {size}"
                    ))
                })? as usize;
                if tensor.data.is_some() {
                    return Err(ApiError::Invalid(format!(
                        "{field}: give data or binary_data_size, not both"
                    )));
                }
                let end = offset
                    .checked_add(size)
                    .filter(|&e| e <= binary.len())
                    .ok_or_else(|| {
                        ApiError::Invalid(format!(
                        "{field}.parameters.binary_data_size: {size} bytes from offset {offset} \
                         overrun the {} bytes of binary data",
                        binary.len()
                    ))
                    })?;
                let host = decode_binary(
                    &tensor.datatype,
                    &tensor.shape,
                    &binary[offset..end],
                    &field,
                )?;
                offset = end;
                host
            }
        };
        decoded.push(host);
    }
    if offset != binary.len() {
        return Err(ApiError::Invalid(format!(
            "binary data: {} bytes after offset {offset} belong to no input",
            binary.len() - offset
        )));
    }
    Ok(decoded)
}

/// Whether output `name` should be sent as binary data: asked for on the output itself or for
/// the whole request (`parameters.binary_data_output`).
pub fn wants_binary(
    request_parameters: Option<&Map<String, Value>>,
    output_parameters: Option<&Map<String, Value>>,
) -> bool {
    let flag = |p: Option<&Map<String, Value>>| {
        p.and_then(|p| p.get("binary_data_output"))
            .and_then(Value::as_bool)
    };
    flag(output_parameters)
        .or(flag(request_parameters))
        .unwrap_or(false)
}

/// A response body under construction: outputs as JSON data or as binary data after the JSON.
#[derive(Default)]
pub struct OipOutputs {
    pub tensors: Vec<OipTensor>,
    binary: Vec<u8>,
}

impl OipOutputs {
    pub fn push(&mut self, name: &str, tensor: &HostTensor, binary: bool) {
        if !binary {
            self.tensors.push(encode_oip(name, tensor));
            return;
        }
        let bytes = tensor.to_le_bytes();
        let mut parameters = Map::new();
        parameters.insert("binary_data_size".to_owned(), Value::from(bytes.len()));
        self.tensors.push(OipTensor {
            name: name.to_owned(),
            shape: tensor.shape.clone(),
            datatype: tensor.datatype().to_owned(),
            parameters: Some(parameters),
            data: None,
        });
        self.binary.extend_from_slice(&bytes);
    }

    /// The response: plain JSON, or JSON then the binary data with its length header. The body
    /// carries the tensors taken from `self.tensors`.
    pub fn respond<T: Serialize>(self, body: &T) -> Response {
        let json = serde_json::to_vec(body).expect("responses serialise");
        if self.binary.is_empty() {
            return ([(header::CONTENT_TYPE, "application/json")], json).into_response();
        }
        let length = HeaderValue::from(json.len());
        let mut bytes = json;
        bytes.extend_from_slice(&self.binary);
        let mut response =
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
        response.headers_mut().insert(HEADER_LENGTH, length);
        response
    }
}
