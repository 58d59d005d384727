"""Pretrain an encoder with the MP paradigm, then probe it: python train_mp.py --config configs/X.json --gpu 0"""
from pipeline import main

if __name__ == "__main__":
    main("MP")
