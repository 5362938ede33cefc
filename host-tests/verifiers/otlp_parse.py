"""Parses what an OTLP/HTTP JSON exporter sent with the official OpenTelemetry
protobuf definitions (PyPI opentelemetry-proto, google.protobuf.json_format),
and writes the file an OpenTelemetry Collector's file exporter would keep.

Usage: python otlp_parse.py BATCHES EXPORTED

BATCHES: one request body (an ExportLogsServiceRequest in OTLP JSON) per line.
EXPORTED: written with one ExportLogsServiceRequest per line, re-serialized by
protobuf's own JSON printer (what `meshguard audit verify` then reads).
Prints a JSON summary: batches, records, event names, severities, attribute
keys, bodies that are JSON records, and the time fields.
Fails (exit 1) on any line json_format refuses: unknown fields, wrong types.
"""
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2


def main():
    summary = {"batches": 0, "records": 0, "event_names": [], "severities": [],
               "attribute_keys": [], "json_bodies": 0, "times": [], "scopes": [], "resources": []}
    with open(sys.argv[1]) as batches, open(sys.argv[2], "w") as exported:
        for line in batches:
            if not line.strip():
                continue
            request = logs_service_pb2.ExportLogsServiceRequest()
            json_format.Parse(line, request)  # strict: unknown fields are errors
            summary["batches"] += 1
            for resource_logs in request.resource_logs:
                for attribute in resource_logs.resource.attributes:
                    summary["resources"].append([attribute.key, attribute.value.string_value])
                for scope_logs in resource_logs.scope_logs:
                    summary["scopes"].append(scope_logs.scope.name)
                    for record in scope_logs.log_records:
                        summary["records"] += 1
                        summary["event_names"].append(record.event_name)
                        summary["severities"].append([record.severity_number, record.severity_text])
                        summary["times"].append([record.time_unix_nano, record.observed_time_unix_nano])
                        keys = sorted(a.key for a in record.attributes)
                        if keys not in summary["attribute_keys"]:
                            summary["attribute_keys"].append(keys)
                        body = json.loads(record.body.string_value)
                        if isinstance(body, dict) and "chain" in body and "mac" in body:
                            summary["json_bodies"] += 1
            exported.write(json_format.MessageToJson(request, indent=None) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
