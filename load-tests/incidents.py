"""Can one incidents processor keep up with a big fleet? The correlator (``streams.incidents``) on a simulated
fleet of 5,000 cameras in 100 sites of 50, each camera raising one alert a minute (and resolving it 30 s to
5 min later), with a site-wide dusk every 5 minutes (all 50 cameras of one site darken within 2 minutes).

Every record is decoded from its JSON bytes, as the processor reads it. Side by side in one run: the decode
alone (the floor any consumer of the alerts topic pays) and decode + correlate. Printed: records/s against
the rate the fleet makes, CPU per record, the grouping delay (simulated seconds from an alert's arrival to
the incident record that carries it: p50, p95; a lone alert waits the whole window by design), and whether
each dusk became exactly one environment incident of its 50 cameras. And the state the processor writes to
its changelog, as it does, every 500 records: the keys a batch changed (its largest record and the bytes per
simulated second, their CPU apart), against the whole state as one record at the end.

    ./dev bench incidents            # 5,000 cameras, 30 simulated minutes
    ./dev bench incidents --quick    # 1,000 cameras, 10 minutes
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import numpy as np

from core.contracts import Alert, CameraInfo, decode_record, encode_record
from core.inventory import Inventory
from core.settings import Settings
from streams.incidents import Correlator

SIGNALS = ("brightness", "blur", "contrast", "saturation")


def fleet_records(cameras: int, minutes: int, site_size: int = 50, seed: int = 7) -> list[tuple[float, bytes]]:
    """(arrival s, JSON alert) in arrival order: raises and resolves of every camera, plus the dusks."""
    rng = random.Random(seed)
    events: list[tuple[float, str, Alert]] = []

    def add(at: float, cam: str, signal: str, value: float, tag: str) -> None:
        aid = f"{cam}:{signal}:{tag}"
        common = dict(alert_id=aid, type="data_drift", camera_id=cam, signal=signal, value=value, threshold=80.0,
                      window=60, message="m")  # fmt: skip
        events.append((at, aid + "r", Alert(status="raised", raised_at=at, **common)))
        end = at + rng.uniform(30, 300)
        events.append((end, aid + "z", Alert(status="resolved", raised_at=end, **common)))

    for c in range(cameras):
        offset = rng.uniform(0, 60)
        for m in range(minutes):
            add(offset + 60 * m, f"cam{c}", rng.choice(SIGNALS), rng.choice((40.0, 120.0)), f"m{m}")
    sites = cameras // site_size
    for k, start in enumerate(range(60, minutes * 60 - 120, 300)):
        site = k % sites
        for c in range(site * site_size, (site + 1) * site_size):
            add(start + rng.uniform(0, 120), f"cam{c}", "brightness", 20.0, f"dusk{k}")
    events.sort(key=lambda e: (e[0], e[1]))
    return [(at, encode_record(a)) for at, _, a in events]


def dusks(minutes: int) -> int:
    return len(range(60, minutes * 60 - 120, 300))


def run(cameras: int, minutes: int, min_share: float | None = None) -> dict:
    records = fleet_records(cameras, minutes)
    inventory = Inventory()
    for c in range(cameras):
        inventory.apply(f"gateway:cam{c}", CameraInfo(camera_id=f"cam{c}", source="gateway", site=f"s{c // 50}"))

    t0 = time.process_time()
    for _, raw in records:
        decode_record(Alert, raw)
    decode_cpu = time.process_time() - t0

    s = Settings()
    corr = Correlator(window_s=s.incident_window_s, min_cameras=s.incident_min_cameras,
                      min_share=s.incident_min_share if min_share is None else min_share, scopes=inventory.scopes,
                      population=inventory.population)  # fmt: skip
    arrived: dict[str, float] = {}
    delays: list[float] = []
    kinds: dict[str, int] = {}
    environment: list[tuple[int, int]] = []  # (dusk alerts, cameras) of each environment incident of a dusk
    coincidences = 0  # environment incidents of background alerts that happened to coincide
    state = {"bytes": 0, "largest": 0, "cpu": 0.0}
    t0 = time.process_time()
    for n, (at, raw) in enumerate(records, 1):
        alert = decode_record(Alert, raw)
        if alert.status == "raised":
            arrived[alert.alert_id] = at
        for e in corr.observe(alert, now=at):
            if e.status in ("raised", "joined"):
                delays += [at - arrived[a] for a in e.alert_ids if a in arrived]
            if e.status == "raised":
                kinds[e.incident.kind] = kinds.get(e.incident.kind, 0) + 1
            if e.status == "resolved" and e.incident.kind == "environment":
                dusk = [a for a in e.incident.members if ":dusk" in a]
                if dusk:
                    environment.append((len(dusk), len(e.incident.cameras)))
                else:
                    coincidences += 1
        corr.prune(at)
        if n % 500 == 0 or n == len(records):  # a batch's state, as the processor writes it
            write_state(corr, state)
    both_cpu = time.process_time() - t0 - state["cpu"]
    whole = len(json.dumps(corr.to_dict()))
    rate_needed = len(records) / (minutes * 60)
    return {
        "cameras": cameras,
        "simulated_minutes": minutes,
        "records": len(records),
        "needed_records_per_s": round(rate_needed, 1),
        "decode_records_per_s": round(len(records) / decode_cpu),
        "records_per_s": round(len(records) / both_cpu),
        "cpu_us_per_record": round(both_cpu / len(records) * 1e6, 1),
        "ratio_to_decode": round(decode_cpu / both_cpu, 3),
        "headroom": round(len(records) / both_cpu / rate_needed, 1),
        "grouping_delay_p50_s": round(float(np.percentile(delays, 50)), 1),
        "grouping_delay_p95_s": round(float(np.percentile(delays, 95)), 1),
        "incidents": kinds,
        "dusks": dusks(minutes),
        "min_share": corr.min_share,
        "dusk_incidents": len(environment),
        "dusk_sizes": sorted({d for d, _ in environment}),
        "coincidence_incidents": coincidences,
        "state_bytes_per_s": round(state["bytes"] / (minutes * 60)),
        "state_largest_record_bytes": state["largest"],
        "state_cpu_us_per_record": round(state["cpu"] / len(records) * 1e6, 1),
        "whole_state_bytes": whole,
    }


def write_state(corr: Correlator, state: dict) -> None:
    """What a batch writes to the state topic: the keys it changed, encoded (their CPU counted apart)."""
    t0 = time.process_time()
    for value in corr.take_changes().values():
        size = len(json.dumps(value).encode()) if value is not None else 0
        state["bytes"] += size
        state["largest"] = max(state["largest"], size)
    state["cpu"] += time.process_time() - t0


def report(r: dict, out=sys.stdout) -> None:
    rows = [
        ("fleet", f"{r['cameras']} cameras, {r['simulated_minutes']} simulated min, {r['records']} records"),
        ("rate the fleet makes", f"{r['needed_records_per_s']} records/s"),
        ("decode only (baseline)", f"{r['decode_records_per_s']} records/s"),
        ("decode + correlate", f"{r['records_per_s']} records/s ({r['cpu_us_per_record']} us CPU each)"),
        ("ratio to the baseline", f"{r['ratio_to_decode']}"),
        ("headroom", f"{r['headroom']}x the fleet's rate on one core"),
        ("grouping delay p50 / p95", f"{r['grouping_delay_p50_s']} / {r['grouping_delay_p95_s']} s (simulated)"),
        ("incidents by kind", json.dumps(r["incidents"])),
        ("dusks -> their incidents", f"{r['dusks']} -> {r['dusk_incidents']} (dusk alerts in each: "
                                     f"{r['dusk_sizes']})"),
        ("background coincidences", f"{r['coincidence_incidents']} environment incidents at min_share "
                                    f"{r['min_share']}"),
        ("state written by key", f"{r['state_bytes_per_s']} B per simulated s, largest record "
                                 f"{r['state_largest_record_bytes']} B, {r['state_cpu_us_per_record']} us CPU "
                                 "per alert record"),
        ("state as one record", f"{r['whole_state_bytes']} B at the end"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}", file=out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cameras", type=int)
    p.add_argument("--minutes", type=int)
    p.add_argument("--min-share", type=float, help="CVOPS_INCIDENT_MIN_SHARE for this run")
    args = p.parse_args()
    cameras = args.cameras or (1000 if args.quick else 5000)
    minutes = args.minutes or (10 if args.quick else 30)
    r = run(cameras, minutes, args.min_share)
    report(r)
    print(json.dumps({"bench": "incidents", **r}))
    ok = r["dusk_incidents"] == r["dusks"] and r["dusk_sizes"] in ([50], [])
    return 0 if ok and r["headroom"] >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
