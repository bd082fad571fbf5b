"""Data shipped with the flight program: the classifier's weights (see flight.classifier)."""
