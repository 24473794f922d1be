//! One unary gRPC call read and answered without tonic's streaming codec: the request body collected
//! (usually one DATA frame, taken without a copy), its one length-prefixed message decoded, and the answer
//! written as one DATA frame and the `grpc-status: 0` trailers. tonic's `Grpc::unary` does the same through
//! a decoding stream, an encoding stream and their buffers, about a third of what an Acquire cost
//! (callgrind; BENCHMARKS.md). The answers to bad input are tonic's, with the codes quotad gives
//! them ([`super::wire_status`]): a body that is not one message is INTERNAL, a compressed message
//! UNIMPLEMENTED (quotad accepts none; a message whose flag says uncompressed is taken whatever
//! `grpc-encoding` says, where tonic refuses the header itself), a message over the limit
//! RESOURCE_EXHAUSTED, an undecodable one INVALID_ARGUMENT. Request trailers are not read into the metadata
//! (gRPC clients send none).

use std::{
    pin::{Pin, pin},
    task::{Context, Poll},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use prost::Message;
use tonic::{
    Request, Response, Status,
    codegen::{StdError, http},
    metadata::{GRPC_CONTENT_TYPE, MetadataMap},
};

/// The gRPC message prefix: a compressed flag and a big-endian length.
const PREFIX: usize = 5;

/// tonic's answer to a compressed message with no encoding named.
const COMPRESSED_WITHOUT_ENCODING: &str =
    "protocol error: received message with compressed-flag but no grpc-encoding was specified";

/// Header names built once (looking a header up by `&str` parses the name on every call).
const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Reads `request`'s one message, at most `limit` bytes long, refusing anything else.
pub async fn read<B, M>(request: http::Request<B>, limit: usize) -> Result<Request<M>, Status>
where
    B: Body,
    B::Error: Into<StdError>,
    M: Message + Default,
{
    let (parts, body) = request.into_parts();
    let framed = collect(body, limit).await.map_err(|e| {
        // A compressed message: name the encoding the caller used, if it said one.
        if e.message() == COMPRESSED_WITHOUT_ENCODING {
            unsupported_encoding(&parts.headers).unwrap_or(e)
        } else {
            e
        }
    })?;
    let message =
        M::decode(framed.slice(PREFIX..)).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

/// quotad accepts no compressed messages: tonic's answer to one sent under a `grpc-encoding`, naming it.
/// (Looked at only once a message says it is compressed: a message whose flag says it is not needs no
/// decompressing whatever the header says, so no lookup on every call.)
fn unsupported_encoding(headers: &http::HeaderMap) -> Option<Status> {
    let named = headers.get(&GRPC_ENCODING)?.as_bytes();
    if named == b"identity" {
        return None;
    }
    let mut status = Status::unimplemented(format!(
        "Content is compressed with `{}` which isn't supported",
        String::from_utf8_lossy(named)
    ));
    status.metadata_mut().insert(
        "grpc-accept-encoding",
        tonic::metadata::MetadataValue::from_static("identity"),
    );
    Some(status)
}

/// The body's bytes: exactly one prefixed message (checked as the bytes arrive, so a body never buffers
/// more than one message and one frame).
async fn collect<B>(body: B, limit: usize) -> Result<Bytes, Status>
where
    B: Body,
    B::Error: Into<StdError>,
{
    let mut body = pin!(body);
    let mut got = Collected::default();
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| Status::from_error(e.into()))?;
        if let Ok(mut data) = frame.into_data() {
            got.push(data.copy_to_bytes(data.remaining()));
            got.check(limit)?;
        }
        if body.is_end_stream() {
            break;
        }
    }
    got.finish()
}

/// The bytes of a request body so far: the first chunk as it came (no copy in the common case of one
/// DATA frame), and later chunks appended to a copy.
#[derive(Default)]
struct Collected {
    first: Bytes,
    joined: Option<BytesMut>,
}

impl Collected {
    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        match &mut self.joined {
            Some(joined) => joined.put(chunk),
            None if self.first.is_empty() => self.first = chunk,
            None => {
                let mut joined = BytesMut::with_capacity(self.first.len() + chunk.len());
                joined.put(std::mem::take(&mut self.first));
                joined.put(chunk);
                self.joined = Some(joined);
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        self.joined.as_deref().unwrap_or(&self.first)
    }

    /// Refuses a prefix quotad cannot take, a message over `limit`, or a second message.
    fn check(&self, limit: usize) -> Result<(), Status> {
        let bytes = self.bytes();
        let Some(len) = message_len(bytes)? else {
            return Ok(());
        };
        if len > limit {
            return Err(Status::resource_exhausted(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
            )));
        }
        if bytes.len() > PREFIX + len {
            return Err(Status::internal(
                "cardinality violation: more than one request message for a unary method",
            ));
        }
        Ok(())
    }

    /// The complete message with its prefix, once the body ended.
    fn finish(self) -> Result<Bytes, Status> {
        let complete = match message_len(self.bytes())? {
            _ if self.bytes().is_empty() => {
                return Err(Status::internal("Missing request message."));
            }
            Some(len) => self.bytes().len() == PREFIX + len,
            None => false,
        };
        if !complete {
            return Err(Status::internal("Unexpected EOF decoding stream."));
        }
        Ok(self.joined.map_or(self.first, BytesMut::freeze))
    }
}

/// The message length a complete prefix declares (None before five bytes arrived); refuses a compressed
/// or unknown flag.
fn message_len(bytes: &[u8]) -> Result<Option<usize>, Status> {
    let Some(prefix) = bytes.get(..PREFIX) else {
        return Ok(None);
    };
    match prefix[0] {
        0 => {}
        1 => return Err(Status::internal(COMPRESSED_WITHOUT_ENCODING)),
        f => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1), while sending request"
            )));
        }
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    Ok(Some(len as usize))
}

/// The HTTP response for a unary answer: the message then `grpc-status: 0`, or a trailers-only error.
pub fn respond<M: Message>(answer: Result<Response<M>, Status>) -> http::Response<Reply> {
    let response = match answer {
        Ok(response) => response,
        Err(status) => return status.into_http(),
    };
    let (metadata, message, extensions) = response.into_parts();
    let len = message.encoded_len();
    let Ok(prefix_len) = u32::try_from(len) else {
        return Status::internal("answer too large to encode").into_http();
    };
    let mut framed = BytesMut::with_capacity(PREFIX + len);
    framed.put_u8(0);
    framed.put_u32(prefix_len);
    message.encode_raw(&mut framed);
    let mut http = http::Response::new(Reply {
        data: Some(framed.freeze()),
        ended: false,
    });
    *http.headers_mut() = metadata.into_headers();
    http.headers_mut()
        .insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    *http.extensions_mut() = extensions;
    http
}

/// A unary answer's body: one DATA frame, then the OK trailers; empty for an error, whose status is in
/// the headers (trailers-only). A body of its own type, so serving it needs no box.
#[derive(Debug)]
pub struct Reply {
    data: Option<Bytes>,
    ended: bool,
}

/// The empty body of a trailers-only answer.
impl Default for Reply {
    fn default() -> Self {
        Self {
            data: None,
            ended: true,
        }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        self.ended = true;
        let mut trailers = http::HeaderMap::with_capacity(1);
        trailers.insert(GRPC_STATUS, http::HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use futures_util::{StreamExt as _, stream};
    use http_body_util::StreamBody;
    use quotad_api::v1 as pb;
    use tonic::Code;

    use super::*;

    const LIMIT: usize = 1024;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn acquire_bytes() -> Vec<u8> {
        pb::AcquireRequest {
            resource: "api".into(),
            permits: 2,
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// A request whose body arrives as `chunks`, one DATA frame each.
    fn request(chunks: Vec<Vec<u8>>) -> http::Request<impl Body<Data = Bytes, Error = Infallible>> {
        let frames = stream::iter(chunks).map(|c| Ok(Frame::data(Bytes::from(c))));
        http::Request::builder()
            .header("traceparent", "00-abc")
            .body(StreamBody::new(frames))
            .unwrap()
    }

    async fn read_acquire(chunks: Vec<Vec<u8>>) -> Result<Request<pb::AcquireRequest>, Status> {
        read(request(chunks), LIMIT).await
    }

    async fn refused(chunks: Vec<Vec<u8>>) -> Status {
        read_acquire(chunks).await.expect_err("refused")
    }

    #[tokio::test]
    async fn one_message_in_one_frame_or_split_anywhere() {
        let whole = framed(0, &acquire_bytes());
        let one = read_acquire(vec![whole.clone()]).await.unwrap();
        assert_eq!(one.get_ref().resource, "api");
        assert_eq!(one.get_ref().permits, 2);
        assert!(one.metadata().get("traceparent").is_some());
        for cut in 1..whole.len() {
            let (a, b) = whole.split_at(cut);
            let split = read_acquire(vec![a.to_vec(), vec![], b.to_vec()])
                .await
                .unwrap();
            assert_eq!(split.get_ref(), one.get_ref(), "cut at {cut}");
        }
        // An empty message is a valid (default) one.
        let empty = read_acquire(vec![framed(0, &[])]).await.unwrap();
        assert_eq!(empty.get_ref(), &pb::AcquireRequest::default());
    }

    #[tokio::test]
    async fn a_body_that_is_not_one_message_is_internal() {
        let whole = framed(0, &acquire_bytes());
        for (chunks, says) in [
            (vec![], "Missing request message"),
            (vec![vec![0, 0, 0]], "Unexpected EOF"),
            (vec![whole[..whole.len() - 1].to_vec()], "Unexpected EOF"),
            (vec![whole.clone(), vec![0]], "cardinality"),
            (vec![[whole.clone(), whole.clone()].concat()], "cardinality"),
            (vec![framed(1, &acquire_bytes())], "compressed-flag"),
            (
                vec![framed(7, &acquire_bytes())],
                "invalid compression flag: 7",
            ),
        ] {
            let e = refused(chunks).await;
            assert_eq!(e.code(), Code::Internal, "{e:?}");
            assert!(e.message().contains(says), "{e:?}");
        }
    }

    #[tokio::test]
    async fn an_oversize_message_is_refused_before_its_body_is_read() {
        let prefix = framed(0, &vec![b'x'; LIMIT + 1])[..PREFIX].to_vec();
        // The body never ends: the answer cannot wait for it.
        let frames = stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(prefix)))])
            .chain(stream::pending());
        let request = http::Request::new(StreamBody::new(frames));
        let read = read::<_, pb::AcquireRequest>(request, LIMIT);
        let e = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("answered at once")
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("found 1025 bytes, the limit is: 1024"),
            "{e:?}"
        );
        // At the limit is fine.
        let at_limit = pb::AcquireRequest {
            resource: "r".repeat(LIMIT - 3),
            ..Default::default()
        };
        assert_eq!(at_limit.encoded_len(), LIMIT);
        let ok = read_acquire(vec![framed(0, &at_limit.encode_to_vec())]).await;
        assert_eq!(ok.unwrap().into_inner(), at_limit);
    }

    #[tokio::test]
    async fn undecodable_is_invalid_argument_and_compression_unimplemented() {
        // Field 1 (resource, a string) sent as a varint.
        let e = refused(vec![framed(0, &[0x08, 0x07])]).await;
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("failed to decode Protobuf message"),
            "{e:?}"
        );
        let with = |encoding: &'static str, flag: u8| {
            let mut req = request(vec![framed(flag, &acquire_bytes())]);
            req.headers_mut()
                .insert("grpc-encoding", http::HeaderValue::from_static(encoding));
            read::<_, pb::AcquireRequest>(req, LIMIT)
        };
        // A compressed message under a named encoding: UNIMPLEMENTED, naming it.
        let e = with("gzip", 1).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
        assert!(e.message().contains("`gzip`"), "{e:?}");
        assert_eq!(
            e.metadata().get("grpc-accept-encoding").unwrap(),
            "identity"
        );
        // Under `identity` it has no encoding: INTERNAL, as with no header.
        let e = with("identity", 1).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        // A message that is not compressed is taken whatever the header says.
        for encoding in ["gzip", "identity"] {
            let ok = with(encoding, 0).await.unwrap();
            assert_eq!(ok.get_ref().resource, "api");
        }
    }

    #[tokio::test]
    async fn an_answer_is_one_message_then_ok_trailers_and_an_error_is_trailers_only() {
        let message = pb::ReleaseResponse {
            released: true,
            refunded_permits: 3,
            ..Default::default()
        };
        let response = respond(Ok(Response::new(message.clone())));
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let mut body = response.into_body();
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            data.as_ref(),
            framed(0, &message.encode_to_vec()).as_slice()
        );
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers.len(), 1);
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());

        let error = respond::<pb::ReleaseResponse>(Err(Status::invalid_argument("lease_id: bad")));
        assert_eq!(error.headers()["grpc-status"], "3");
        assert_eq!(error.headers()["grpc-message"], "lease_id:%20bad");
        assert!(error.into_body().frame().await.is_none());
    }
}
