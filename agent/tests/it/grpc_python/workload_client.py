"""A Workload API client on gRPC's C-core (Python grpcio), for
agent/tests/it/workload_api_grpc_python.rs. It prints one JSON object with what
each call returned or the gRPC status it failed with; the Rust test asserts.

Two flavours:
  stubs    -- stubs generated at run time from the project's own
              api/proto/spiffe/workload.proto with grpc_tools.protoc; the
              :authority is chosen with --authority (default: what C-core
              derives from the socket path, i.e. the percent-encoded path).
  library  -- the SPIFFE project's Python library (PyPI `spiffe`).
"""

import argparse
import importlib
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import grpc  # noqa: E402

AUDIENCE = "db"


def status(e):
    if isinstance(e, grpc.Call):
        return {"error": {"code": e.code().name, "details": e.details()}}
    return {"error": {"code": "EXCEPTION", "details": f"{type(e).__name__}: {e}"}}


def generate_stubs(proto_dir, out_dir):
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(proto_dir, "workload.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)
    return importlib.import_module("workload_pb2"), importlib.import_module("workload_pb2_grpc")


def first(stream):
    try:
        return next(stream)
    finally:
        stream.cancel()


def run_stubs(args):
    pb, pb_grpc = generate_stubs(args.proto, args.stubs)
    options = []
    if args.authority is not None:
        options.append(("grpc.default_authority", args.authority))
    channel = grpc.insecure_channel(f"unix:{args.socket}", options=options)
    stub = pb_grpc.SpiffeWorkloadAPIStub(channel)
    md = [] if args.no_header else [("workload.spiffe.io", "true")]
    t = 10
    out = {}

    def call(name, fn):
        try:
            out[name] = fn()
        except Exception as e:  # noqa: BLE001 -- reported to the Rust side
            out[name] = status(e)

    def x509():
        r = first(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=md, timeout=t))
        return {
            "svids": [
                {
                    "spiffe_id": s.spiffe_id,
                    "chain": s.x509_svid.hex(),
                    "key": s.x509_svid_key.hex(),
                    "bundle": s.bundle.hex(),
                    "hint": s.hint,
                }
                for s in r.svids
            ],
            "federated": sorted(r.federated_bundles.keys()),
        }

    def x509_bundles():
        r = first(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=md, timeout=t))
        return {"bundles": {k: v.hex() for k, v in r.bundles.items()}}

    def jwt():
        r = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=[AUDIENCE]), metadata=md, timeout=t)
        return {"svids": [{"spiffe_id": s.spiffe_id, "svid": s.svid, "hint": s.hint} for s in r.svids]}

    def jwt_bundles():
        r = first(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=md, timeout=t))
        return {"bundles": {k: v.decode() for k, v in r.bundles.items()}}

    call("FetchX509SVID", x509)
    call("FetchX509Bundles", x509_bundles)
    call("FetchJWTSVID", jwt)
    call("FetchJWTBundles", jwt_bundles)
    token = args.token or (out["FetchJWTSVID"].get("svids") or [{}])[0].get("svid", "x.y.z")

    def validate(audience):
        def go():
            r = stub.ValidateJWTSVID(
                pb.ValidateJWTSVIDRequest(audience=audience, svid=token), metadata=md, timeout=t
            )
            claims = json.loads(json.dumps(dict(r.claims), default=str))
            return {"spiffe_id": r.spiffe_id, "claims": claims}

        return go

    call("ValidateJWTSVID", validate(AUDIENCE))
    call("ValidateJWTSVID/other-audience", validate("other"))
    channel.close()
    return out


def run_library(args):
    from spiffe import JwtSvid, WorkloadApiClient
    from cryptography.hazmat.primitives.serialization import Encoding

    out = {}
    with WorkloadApiClient(socket_path=f"unix:{args.socket}", default_timeout=10) as client:

        def call(name, fn):
            try:
                out[name] = fn()
            except Exception as e:  # noqa: BLE001 -- reported to the Rust side
                out[name] = {"error": {"code": type(e).__name__, "details": str(e)}}

        def x509():
            s = client.fetch_x509_svid()
            return {
                "spiffe_id": str(s.spiffe_id),
                "chain": [c.public_bytes(Encoding.DER).hex() for c in s.cert_chain],
            }

        def x509_bundles():
            bs = client.fetch_x509_bundles()
            return {
                "bundles": {
                    str(b.trust_domain): sorted(c.public_bytes(Encoding.DER).hex() for c in b.x509_authorities)
                    for b in bs.bundles
                }
            }

        jwt_holder = {}

        def jwt():
            s = client.fetch_jwt_svid(audience={AUDIENCE})
            jwt_holder["token"] = s.token
            return {"spiffe_id": str(s.spiffe_id), "audience": sorted(s.audience), "token": s.token}

        bundles_holder = {}

        def jwt_bundles():
            bs = client.fetch_jwt_bundles()
            bundles_holder["set"] = bs
            return {"trust_domains": sorted(str(b.trust_domain) for b in bs.bundles)}

        def validate():
            s = client.validate_jwt_svid(jwt_holder.get("token", args.token or "x.y.z"), AUDIENCE)
            return {"spiffe_id": str(s.spiffe_id)}

        def offline():
            from spiffe import TrustDomain

            bundle = bundles_holder["set"].get_bundle_for_trust_domain(TrustDomain("example.org"))
            s = JwtSvid.parse_and_validate(jwt_holder["token"], bundle, {AUDIENCE})
            try:
                JwtSvid.parse_and_validate(jwt_holder["token"], bundle, {"other"})
                other = "accepted"
            except Exception as e:  # noqa: BLE001
                other = type(e).__name__
            return {"spiffe_id": str(s.spiffe_id), "other_audience": other}

        call("FetchX509SVID", x509)
        call("FetchX509Bundles", x509_bundles)
        call("FetchJWTSVID", jwt)
        call("FetchJWTBundles", jwt_bundles)
        call("ValidateJWTSVID", validate)
        if "token" in jwt_holder and "set" in bundles_holder:
            call("offline JWT-SVID validation", offline)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--flavour", choices=["stubs", "library"], required=True)
    p.add_argument("--proto", help="directory of workload.proto (stubs)")
    p.add_argument("--stubs", help="directory for the generated stubs (stubs)")
    p.add_argument("--authority", help="grpc.default_authority (stubs); absent: C-core's own")
    p.add_argument("--no-header", action="store_true", help="omit workload.spiffe.io (stubs)")
    p.add_argument("--token", help="a JWT-SVID to validate when this caller cannot mint one")
    args = p.parse_args()
    out = run_stubs(args) if args.flavour == "stubs" else run_library(args)
    out["grpc_version"] = grpc.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
