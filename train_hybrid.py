"""Pretrain an encoder with the Hybrid paradigm, then probe it: python train_hybrid.py --config configs/X.json --gpu 0"""
from pipeline import main

if __name__ == "__main__":
    main("Hybrid")
