"""TensorBoard views of searches, retrains and genotypes (``nas board``)."""
