from knowpay.cli import main

main()
