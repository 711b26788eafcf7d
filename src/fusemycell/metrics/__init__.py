"""The challenge's metrics: SSIM and N_SSIM (exact, bounded memory), and a segmentation-based N_IoU (no Kedro)."""
