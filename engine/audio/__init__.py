"""Audio features for the Face-Sync controller: several encoders behind one interface."""
