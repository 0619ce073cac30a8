"""A plain OpenTelemetry agent that knows nothing of runlens.

It is configured the OpenTelemetry way, by environment: OTEL_EXPORTER_OTLP_ENDPOINT
(e.g. http://127.0.0.1:4317), OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf) and
OTEL_SERVICE_NAME. Pointed at runlens, each task becomes a run whose spans carry the
machine at their own start and end.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python otel_agent.py --tasks 3

Each task: `invoke_agent support` over an LLM call (`chat llama-3-8b`, with gen_ai token
counts) and a tool call that fails with an exception every second task.
"""

import argparse
import os
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def exporter():
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint)


def task(tracer, i, step_s):
    with tracer.start_as_current_span("invoke_agent support") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("task", i)
        with tracer.start_as_current_span("chat llama-3-8b", kind=SpanKind.CLIENT) as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.request.model", "llama-3-8b")
            time.sleep(step_s)
            llm.set_attribute("gen_ai.usage.input_tokens", 800 + i)
            llm.set_attribute("gen_ai.usage.output_tokens", 200 + i)
        try:
            with tracer.start_as_current_span("execute_tool search"):
                time.sleep(step_s / 2)
                if i % 2 == 1:
                    raise TimeoutError("search took longer than 100 ms")
        except TimeoutError:
            # The SDK recorded the exception event and an ERROR status on the tool span;
            # the agent goes on.
            root.set_status(Status(StatusCode.OK))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--step-ms", type=float, default=150)
    args = parser.parse_args()
    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "otel-agent"),
         "process.pid": os.getpid()}))
    provider.add_span_processor(BatchSpanProcessor(exporter()))
    tracer = provider.get_tracer("otel_agent")
    for i in range(args.tasks):
        task(tracer, i, args.step_ms / 1000)
    provider.shutdown()  # exports what is buffered
    print(f"{args.tasks} tasks traced")


if __name__ == "__main__":
    main()
