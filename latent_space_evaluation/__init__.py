"""Latent-space evaluation of pretrained encoders (CLI: latent_space_evaluator.py).

    reducers   stratified subsampling; PCA, t-SNE and UMAP maps to 2-D
    metrics    cluster quality, label agreement, geometry, map faithfulness (definitions in its docstring)
    plotter    maps coloured by sleep stage; bar charts comparing configs
    evaluate   load a run's per-fold embeddings, evaluate, write results/<exp_name>/latent/; summarize runs
"""
