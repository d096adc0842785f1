import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
def rows(p): return [json.loads(l) for l in open(p)]
sr = rows("runs/mini_s1/table1/runs/c10-smallcnn.sr-adam/metrics.jsonl")
big = rows("runs/mini_s1/table1/runs/c10-smallcnn.big-sr-adam/metrics.jsonl")
eq = rows("runs/bigsr_s1_equal_steps/metrics.jsonl")
fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
for r, lab, spe, c in ((sr, "SR-ADAM, batch 128, 15 epochs", 390, "tab:orange"), (big, "Big SR-ADAM, batch 1024, 15 epochs", 48, "tab:green"),
                       (eq, "Big SR-ADAM, batch 1024, 120 epochs (equal steps)", 48, "tab:blue")):
    steps = [x["epoch"] * spe for x in r]
    ax[0].plot(steps, [x["test_error"] for x in r], label=lab, color=c)
    ax[1].plot(steps, [sum(x["weight_change"].values()) / len(x["weight_change"]) for x in r], label=lab, color=c)
ax[0].set(xlabel="optimizer steps", ylabel="test error (%)", title="SR vs Big SR at s = 1 (mini, CIFAR-10)")
ax[1].set(xlabel="optimizer steps", ylabel="% weights changed (mean of layers)", title="exploration")
for a in ax: a.grid(alpha=0.3)
ax[0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[1], dpi=110)
