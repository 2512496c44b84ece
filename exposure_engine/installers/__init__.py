"""Installers of the editor plug-ins: ``exposure_engine.installers.<editor>.install()`` / ``uninstall()``."""
