//! W3C trace context on outgoing calls: with the `otel` feature (on by default), every call carries the
//! caller's current `tracing` span as a `traceparent` (and `tracestate`) header, so quotad's span for the
//! call joins the caller's trace. This needs the application to use `tracing-opentelemetry`; without an
//! OpenTelemetry context nothing is added.

/// A request for `message`, carrying the current trace context.
pub(crate) fn request<T>(message: T) -> tonic::Request<T> {
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut request = tonic::Request::new(message);
    #[cfg(feature = "otel")]
    inject(request.metadata_mut());
    request
}

#[cfg(feature = "otel")]
fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return;
    }
    let parent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    if let Ok(v) = parent.parse() {
        metadata.insert("traceparent", v);
    }
    let state = sc.trace_state().header();
    if !state.is_empty()
        && let Ok(v) = state.parse()
    {
        metadata.insert("tracestate", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_otel_context_nothing_is_added() {
        let r = request(());
        assert!(r.metadata().get("traceparent").is_none());
    }
}
