"""gridpersona: smart-meter data -> customer portraits and campaign targets."""
__version__ = "0.1.0"
