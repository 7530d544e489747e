"""Markdown SI-SDRi table (mean ± 95 % CI) from `lvbd evaluate` JSONs.

    .venv/bin/python benchmarks/results_table.py oracle-irm,oracle-ibm,oracle-psm results/oracles 2,3
"""
import json, sys
sets=["id","ood-espeak","ood-lang","ood-mbrola","ood-tts","ood-real","noisy","shipped-heldout"]
models=sys.argv[1].split(",")
root=sys.argv[2] if len(sys.argv)>2 else "results/oracles"
Ks=[int(k) for k in (sys.argv[3] if len(sys.argv)>3 else "2,3").split(",")]
print("| set | " + " | ".join(models) + " |")
print("|---|" + "---|"*len(models))
for K in Ks:
    for s in sets:
        cells=[]
        for m in models:
            try:
                d=json.load(open(f"{root}/{m}/{s}_{K}spk.json"))["metrics"]["si_sdri"]
                cells.append(f"{d['mean']:.2f} ± {d['ci95_half']:.2f}")
            except FileNotFoundError:
                cells.append("—")
        print(f"| {s}/{K}spk | " + " | ".join(cells) + " |")
