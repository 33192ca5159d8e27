"""The summary table at the top of docs/results.md, from the replay rows that
scripts/results.sh collects: `title|controller|overload|replica-minutes|peak|changes|per day|`.

The acceptance of issue 15 is spelled out per trace: against the HPA, at most half its
overload minutes (or at most 1 minute where it has under 2) and no more replica-minutes;
against the peer (a model of Crane EHPA's method), better on at least one axis and worse on
neither; and no more replica changes per day than the HPA."""
import sys

rows = {}
for line in open(sys.argv[1]):
    parts = [p.strip() for p in line.strip().strip("|").split("|")]
    title, who = parts[0], parts[1]
    overload, cost, per_day = float(parts[2]), float(parts[3]), float(parts[6])
    rows.setdefault(title, {})[who] = (overload, cost, per_day)


def ratio(a, b):
    return "-" if b == 0 else f"{a / b:.2f}"


print("## Summary")
print()
print("Augur (`policies/nginx.yaml`) as a ratio of the HPA and of the peer (a model of Crane EHPA's")
print("method), per trace: below 1 is better. The tables under it hold the figures. In the last two")
print("columns 0.1% of replica-minutes and 0.05 overload minutes are ties.")
print()
print("| trace | overload vs HPA | replica-min vs HPA | overload vs peer | replica-min vs peer | changes/day augur / HPA | beats the HPA on both | beats the peer |")
print("|---|---:|---:|---:|---:|---:|:---:|:---:|")
for title, r in rows.items():
    (ao, ac, ad), (ho, hc, hd), (eo, ec, ed) = r["augur"], r["hpa"], r["ehpa"]
    # 0.1% of replica-minutes is a tie here and against the peer (a pod for a few steps of the
    # trace); host/tests/all/replay.rs asserts the same.
    overload_ok = ao <= ho / 2 or (ho < 2 and ao <= 1.0)
    hpa_ok = overload_ok and ac <= hc * 1.001 and ad <= hd
    # "At least one axis better, neither worse" against the peer (0.05 min and 0.1% are ties).
    better = (ao < eo - 0.05) or (ac < ec * 0.999)
    worse = (ao > eo + 0.05) or (ac > ec * 1.001)
    peer_ok = better and not worse
    short = title.split(" (")[0]
    print(f"| {short} | {ratio(ao, ho)} ({ao:.1f} / {ho:.1f}) | {ratio(ac, hc)} | {ratio(ao, eo)} ({ao:.1f} / {eo:.1f}) | {ratio(ac, ec)} | {ad:.1f} / {hd:.1f} | {'yes' if hpa_ok else 'no'} | {'yes' if peer_ok else 'no'} |")
print()
