"""Looking at a trained model: margins (numbers), plots (figures, one palette), the margin explorer (widgets)."""
