"""Pretrain an encoder with the CRL paradigm, then probe it: python train_crl.py --config configs/X.json --gpu 0"""
from pipeline import main

if __name__ == "__main__":
    main("CRL")
