"""Evaluation: feature extraction, weighted kNN top-1 (Wu et al. 2018), linear probe, fine-tuning."""

from sslzoo.evaluation.features import extract_features
from sslzoo.evaluation.knn import knn_predict, knn_top1
from sslzoo.evaluation.finetune import finetune, labelled_subset
from sslzoo.evaluation.linear import build_linear_head, linear_probe, top1_percent

__all__ = ["extract_features", "knn_top1", "knn_predict", "linear_probe", "build_linear_head", "top1_percent",
           "finetune", "labelled_subset"]
