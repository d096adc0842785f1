"""The poster's Table 1: its rows (methods), columns (data set + model) and top-1 test errors (%).

>>> PAPER["bc-adam"]["c10-vgg9"] - PAPER["adam"]["c10-vgg9"]  # BC-ADAM's gap to float on VGG-9
2.3899999999999997
"""
from __future__ import annotations

ROWS = {"adam": "ADAM", "bc-adam": "BC-ADAM", "big-sr-adam": "Big SR-ADAM", "sr-adam": "SR-ADAM", "r-adam": "R-ADAM"}
# Rows of our studies beyond the poster's five, shown after the row named: Big SR-ADAM trained for as
# many optimizer steps as SR-ADAM (8x the epochs), where the poster's Big SR-ADAM had equal epochs.
EXTRA_ROWS = {"big-sr-adam-steps": ("Big SR-ADAM (equal steps)", "big-sr-adam")}
LABELS = {**ROWS, **{k: v[0] for k, v in EXTRA_ROWS.items()}}
COLUMNS = {"c10-vgg9": "CIFAR-10 VGG-9", "c10-vggbc": "CIFAR-10 VGG-BC", "c10-resnet56": "CIFAR-10 ResNet-56",
           "c10-wrn56_2": "CIFAR-10 WRN-56-2", "c100-resnet56": "CIFAR-100 ResNet-56",
           "imagenet-resnet18": "ImageNet ResNet-18"}
# Top-1 test error (%) from the poster's Table 1 [poster]
PAPER = {
    "adam":        {"c10-vgg9": 7.97, "c10-vggbc": 7.12, "c10-resnet56": 8.10, "c10-wrn56_2": 6.62, "c100-resnet56": 33.98, "imagenet-resnet18": 36.04},
    "bc-adam":     {"c10-vgg9": 10.36, "c10-vggbc": 8.21, "c10-resnet56": 8.83, "c10-wrn56_2": 7.17, "c100-resnet56": 35.34, "imagenet-resnet18": 52.11},
    "big-sr-adam": {"c10-vgg9": 16.95, "c10-vggbc": 16.77, "c10-resnet56": 19.84, "c10-wrn56_2": 16.04, "c100-resnet56": 50.79, "imagenet-resnet18": 77.68},
    "sr-adam":     {"c10-vgg9": 23.33, "c10-vggbc": 20.56, "c10-resnet56": 26.49, "c10-wrn56_2": 21.58, "c100-resnet56": 58.06, "imagenet-resnet18": 88.86},
    "r-adam":      {"c10-vgg9": 23.99, "c10-vggbc": 21.88, "c10-resnet56": 33.56, "c10-wrn56_2": 27.90, "c100-resnet56": 68.39, "imagenet-resnet18": 91.07},
}
ORDER = list(ROWS)  # the poster's ordering, best to worst
DISPLAY = [r for row in ORDER for r in [row] + [k for k, v in EXTRA_ROWS.items() if v[1] == row]]  # table rows
